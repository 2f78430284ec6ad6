package azure

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// HostJSON is the name of the app's host configuration file, in the app's
// root directory.
const HostJSON = "host.json"

// ReadRoutePrefix returns the route prefix of the app in appDir: the
// extensions.http.routePrefix of <appDir>/host.json, without slashes
// around it ("/v1/" gives "v1"; "" means routes start right after the
// host, "/<route>"). It is DefaultRoutePrefix ("api") when host.json does
// not exist or does not set the property.
//
// host.json is read as the official host reads it (Newtonsoft's
// JObject.Parse of File.ReadAllText): a UTF-8 or UTF-16 byte-order mark is
// honoured, "//" and "/* */" comments and trailing commas in objects and
// arrays are allowed, the document must be an object, property names are
// matched without regard to case (as .NET configuration keys), and when a
// name appears more than once the last value wins. A JSON null sets the
// prefix to "" (as the official host's configuration binding does); an
// object or array value is ignored (the prefix stays as it was).
//
// Errors name the file: it cannot be read, it is not valid JSON (with the
// line and column), or the prefix is not usable — not a string (the
// official host would take a number's or boolean's text; polyfn refuses
// it), or not a path of literal segments (route parameters, empty
// segments, '?', '#', spaces and control characters are refused; the
// official host would build a route template from it or fail to start).
// Other host.json settings, including "version", are not checked here.
func ReadRoutePrefix(appDir string) (string, error) {
	path := filepath.Join(appDir, HostJSON)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultRoutePrefix, nil
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	doc, err := parseHostJSON(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	prefix := DefaultRoutePrefix
	for _, v := range lookupAll(doc, "extensions", "http", "routePrefix") {
		v = bytes.TrimSpace(v)
		switch v[0] {
		case '{', '[':
			continue // sets nested keys, not the prefix
		case 'n':
			prefix = ""
		case '"':
			if err := json.Unmarshal(v, &prefix); err != nil {
				return "", fmt.Errorf("%s: extensions.http.routePrefix: %v", path, err)
			}
		default:
			return "", fmt.Errorf("%s: extensions.http.routePrefix must be a string, not %s", path, v)
		}
	}
	prefix = strings.Trim(prefix, "/")
	if _, err := parsePrefix(prefix); err != nil {
		return "", fmt.Errorf("%s: extensions.http.routePrefix %q: %w", path, prefix, err)
	}
	return prefix, nil
}

// parseHostJSON decodes host.json's bytes (see ReadRoutePrefix) and
// returns the top-level object as plain JSON.
func parseHostJSON(data []byte) (json.RawMessage, error) {
	text, err := stripJSONExtensions(decodeText(data))
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	doc := json.RawMessage(text)
	if err := json.Unmarshal(doc, new(any)); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			// Offset counts the bytes read, the offending one included.
			line, col := lineCol(text, max(se.Offset-1, 0))
			return nil, fmt.Errorf("invalid JSON at line %d, column %d: %v", line, col, err)
		}
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if t := bytes.TrimSpace(doc); t[0] != '{' {
		return nil, errors.New("invalid JSON: the document must be an object")
	}
	return doc, nil
}

// stripJSONExtensions replaces the comments ("//" to the end of the line,
// "/* ... */") and the trailing commas (a ',' before a '}' or ']') of s
// with spaces, so that encoding/json accepts what Newtonsoft's reader does
// and byte offsets stay those of s.
func stripJSONExtensions(s string) (string, error) {
	b := []byte(s)
	blank := func(i, j int) {
		for ; i < j; i++ {
			if b[i] != '\n' && b[i] != '\r' {
				b[i] = ' '
			}
		}
	}
	// Comments.
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '"':
			i = endOfString(b, i)
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '/':
			j := i
			for j < len(b) && b[j] != '\n' && b[j] != '\r' {
				j++
			}
			blank(i, j)
			i = j
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '*':
			end := bytes.Index(b[i+2:], []byte("*/"))
			if end < 0 {
				line, col := lineCol(string(b), int64(i))
				return "", fmt.Errorf("comment at line %d, column %d is not closed", line, col)
			}
			j := i + 2 + end + 2
			blank(i, j)
			i = j - 1
		}
	}
	// Trailing commas.
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = endOfString(b, i)
		case ',':
			j := i + 1
			for j < len(b) && (b[j] == ' ' || b[j] == '\t' || b[j] == '\n' || b[j] == '\r') {
				j++
			}
			if j < len(b) && (b[j] == '}' || b[j] == ']') {
				b[i] = ' '
			}
		}
	}
	return string(b), nil
}

// endOfString returns the index of the quote closing the JSON string that
// opens at b[i] (len(b) when it is not closed).
func endOfString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(b)
}

// lineCol converts a byte offset of s into a 1-based line and column (in
// characters).
func lineCol(s string, off int64) (line, col int) {
	if off > int64(len(s)) {
		off = int64(len(s))
	}
	before := s[:off]
	line = strings.Count(before, "\n") + 1
	col = len([]rune(before[strings.LastIndexByte(before, '\n')+1:])) + 1
	return line, col
}

// lookupAll returns, in document order, every value at path in the JSON
// object doc, property names compared without regard to case; a value
// that is not an object on the way is skipped.
func lookupAll(doc json.RawMessage, path ...string) []json.RawMessage {
	if len(path) == 0 {
		return []json.RawMessage{doc}
	}
	var out []json.RawMessage
	for _, m := range members(doc) {
		if strings.EqualFold(m.key, path[0]) {
			out = append(out, lookupAll(m.value, path[1:]...)...)
		}
	}
	return out
}
