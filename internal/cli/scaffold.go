package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/scaffold"
)

func initCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "init [DIR]",
		Short: "Write a commented polyfn.yaml into DIR (default: the current directory)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			file, err := scaffold.Init(dir)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			cmd.Printf("wrote %s\nnext: polyfn new hello --runtime python3 (or node, go)\n", file)
			return nil
		},
	}
}

func newCmd() *cobra.Command {
	var file, runtime, trigger, codedir string
	var list bool
	cmd := &cobra.Command{
		Use:   "new NAME --runtime python3|node|go [--trigger http|mqtt|timer]",
		Short: "Write a new function from a template and add it to polyfn.yaml",
		Long: "Write a new function's directory (functions/NAME by default) from its runtime's\n" +
			"template — a handler, a dependency file and a test in the language's own\n" +
			"framework — and add the function to the config file, keeping its comments\n" +
			"and order. polyfn new --list shows the templates.",
		Args: func(cmd *cobra.Command, args []string) error {
			if list {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if list {
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "RUNTIME\tFILES\tTEST\tWHAT")
				for _, t := range scaffold.Templates() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.Runtime, strings.Join(t.Files, " "), t.Test, t.About)
				}
				fmt.Fprintf(w, "\ntriggers (--trigger): %s\n", strings.Join(scaffold.Triggers, ", "))
				return w.Flush()
			}
			if runtime == "" {
				return &exitError{code: 2, err: fmt.Errorf("--runtime is required: one of python3, node, go")}
			}
			res, err := scaffold.New(context.Background(), scaffold.Options{
				Config: file, Name: args[0], Runtime: runtime, Trigger: trigger, Codedir: codedir,
				Log: func(format string, a ...any) { fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", a...) },
			})
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			rel := res.Codedir
			if wd, err := os.Getwd(); err == nil {
				if r, err := filepath.Rel(wd, res.Codedir); err == nil && !strings.HasPrefix(r, "..") {
					rel = r
				}
			}
			cmd.Printf("wrote %s: %s\nadded %s to %s\ntest it: cd %s && %s\nserve it: polyfn serve -c %s\n",
				rel, strings.Join(res.Files, ", "), args[0], file, rel, res.Test, file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", scaffold.ConfigFile, "config file to add the function to")
	cmd.Flags().StringVar(&runtime, "runtime", "", "python3, node or go")
	cmd.Flags().StringVar(&trigger, "trigger", "http", "http, mqtt or timer")
	cmd.Flags().StringVar(&codedir, "codedir", "", "the function's directory, relative to the config file (default functions/NAME)")
	cmd.Flags().BoolVar(&list, "list", false, "list the templates")
	return cmd
}
