package cli

import (
	"context"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/build"
	"github.com/polyfn/polyfn/internal/builduser"
	"github.com/polyfn/polyfn/internal/config"
)

// loadFunctions builds cfg's functions (cached) and loads each one without
// serving it, printing every problem with file:line.
func loadFunctions(cmd *cobra.Command, cfg *config.Config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	specs := build.Plan(cfg)
	results := map[string]build.Result{}
	if len(specs) > 0 {
		b := build.New(build.Options{Dir: build.Dir(cfg), Runner: builduser.For(cfg)})
		for _, r := range b.Run(ctx, specs) {
			results[r.Function] = r
		}
	}
	problems := build.Check(ctx, cfg, results, 0)
	for _, p := range problems {
		cmd.PrintErrln(p.String())
	}
	if len(problems) > 0 {
		what := fmt.Sprintf("%d functions do not load", len(problems))
		if len(problems) == 1 {
			what = "1 function does not load"
		}
		return &exitError{code: 1, err: fmt.Errorf("%s: %s", cfg.File, what)}
	}
	return nil
}
