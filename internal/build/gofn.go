package build

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/polyfn/polyfn/internal/gobuild"
)

// A Go function is built with the go command into go/ (internal/gobuild):
// third-party modules come through the module proxy of the environment
// (GOPROXY, GOFLAGS, GONOSUMDB, … as the go command reads them).

func (b *Builder) goBinary(ctx context.Context, sp Spec) (string, bool, error) {
	began := time.Now()
	bin, err := b.gb.Build(ctx, sp.Codedir)
	if err != nil {
		var ce *gobuild.CompileError
		if errors.As(err, &ce) {
			b.ran()
			return "", false, &Error{Function: sp.Function, Command: "go build (in " + sp.Codedir + ")", Output: tail(absPositions(ce.Output, sp.Codedir)), Err: errors.New("compile errors")}
		}
		return "", false, err
	}
	st, err := os.Stat(bin)
	cached := err == nil && st.ModTime().Before(began)
	if !cached {
		b.ran()
	}
	return bin, cached, nil
}

// absPositions makes the go command's relative positions (./main.go:3:2)
// absolute, so that they name the file wherever they are read.
func absPositions(out, dir string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "./") {
			lines[i] = filepath.Clean(dir) + string(filepath.Separator) + l[2:]
		}
	}
	return strings.Join(lines, "\n")
}
