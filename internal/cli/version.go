package cli

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/buildinfo"
	"github.com/polyfn/polyfn/internal/runtimes"
)

// versionCmd prints the host's version and, for each runtime, its version
// and where it was found. A runtime that cannot be found or started is
// printed with the command that fixes it, and the exit status is 1.
func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the host's version and each runtime's version and location",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			home := runtimes.Locate()
			fmt.Fprintf(out, "polyfn %s (commit %s, %s, %s/%s)\n", buildinfo.Version, buildinfo.CommitOrUnknown(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			where := home.Root
			if where == "" {
				where = "runtimes looked up on PATH"
			}
			fmt.Fprintf(out, "layout: %s (%s)\n", home.Layout, where)
			rts := []runtimes.Runtime{home.Python(), home.Node()}
			infos := make([]runtimes.Info, len(rts))
			errs := make([]error, len(rts))
			var wg sync.WaitGroup
			for i, r := range rts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					infos[i], errs[i] = runtimes.Probe(context.Background(), r)
				}()
			}
			wg.Wait()
			failed := 0
			for i, r := range rts {
				if errs[i] != nil {
					failed++
					fmt.Fprintf(out, "%s: unavailable: %v\n", r.Name, errs[i])
					continue
				}
				fmt.Fprintf(out, "%s: polyfn-runtime %s, %s (%s), runtime at %s\n", r.Name, infos[i].Version, infos[i].Interpreter, r.Interpreter, infos[i].Where)
			}
			goTool := runtimes.GoTool()
			gover := "no go command: Go functions cannot be built"
			if v, err := exec.Command(goTool, "env", "GOVERSION").Output(); err == nil {
				gover = strings.TrimSpace(string(v)) + " (" + goTool + ")"
			}
			sdk, _ := home.GoSDK()
			if sdk == "" {
				sdk = "no SDK carried: Go functions outside polyfn's repository cannot use it"
			} else {
				sdk = "SDK at " + sdk
			}
			fmt.Fprintf(out, "go: %s, %s\n", gover, sdk)
			if failed > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
}
