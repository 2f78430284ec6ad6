package invoke

import "strings"

// AppsBroken is the cause (Error.Err) of the 502 AppBroken answering a
// request no app could route because the apps that might serve it could not
// be indexed. The Error's Message has their reasons (the worker's error, its
// stderr, the app's paths); Public is what a client that may not read them
// is told.
type AppsBroken struct {
	// Apps names the broken apps.
	Apps []string
}

func (e *AppsBroken) Error() string { return e.Public() }

// Public is the message without the reasons: "app X is not available".
func (e *AppsBroken) Public() string {
	if len(e.Apps) == 1 {
		return "app " + e.Apps[0] + " is not available"
	}
	return "apps " + strings.Join(e.Apps, ", ") + " are not available"
}
