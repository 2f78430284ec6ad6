package server

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// watch signals changes when the config file or a file under a function's
// code directory changes (name, size or modification time).
func (s *Server) watch(ctx context.Context, changes chan<- struct{}) {
	last := s.fingerprint()
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if fp := s.fingerprint(); fp != last {
			last = fp
			select {
			case changes <- struct{}{}:
			default:
			}
		}
	}
}

// fingerprint sums up the watched files: the config file, then every file
// under the functions' and apps' code directories, in a fixed order (the
// directories sorted, each walked in lexical order), so that it changes only
// when a file does.
func (s *Server) fingerprint() string {
	h := fmt.Sprint(stat(s.o.File))
	for _, d := range s.watchedDirs() {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if e.IsDir() && p != d && (e.Name()[0] == '.' || e.Name() == "node_modules" || e.Name() == "__pycache__") {
				return filepath.SkipDir
			}
			if !e.IsDir() {
				h += p + fmt.Sprint(stat(p))
			}
			return nil
		})
	}
	return h
}

// watchedDirs returns the code directories of the running configuration,
// sorted and without duplicates.
func (s *Server) watchedDirs() []string {
	g := s.current.Load()
	if g == nil {
		return nil
	}
	var dirs []string
	for _, f := range g.h.Status() {
		if d := g.h.Codedir(f.Name); d != "" {
			dirs = append(dirs, d)
		}
	}
	for _, a := range g.h.AppStatus() {
		if d := g.h.Codedir(a.Name); d != "" {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

func stat(p string) string {
	st, err := os.Stat(p)
	if err != nil {
		return "missing"
	}
	return fmt.Sprint(st.Size(), st.ModTime().UnixNano())
}
