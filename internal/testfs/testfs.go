// Package testfs holds file-system helpers for tests, with no dependency on
// the rest of polyfn, so that any package's tests may use them (hosttest
// imports the host, which the packages below it cannot).
package testfs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Reachable makes dir, and the directories above it up to the temporary
// directory (t.TempDir makes them 0700), readable and searchable by every
// user, for workers and builds that run as users of their own.
func Reachable(t testing.TB, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, st.Mode().Perm()|0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// WriteTarball writes files (name to text) into a gzipped tar archive at
// path, as npm pack makes a package.
func WriteTarball(t testing.TB, path string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, text := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(text)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Snapshot lists every file, directory and link under the roots with its
// mode, size and modification time, one per line, sorted: anything
// written, created, removed or renamed there changes it (a test running as
// root writes whatever the modes).
func Snapshot(t testing.TB, roots ...string) string {
	t.Helper()
	var lines []string
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			st, err := os.Lstat(p)
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("%s %s %d %s", p, st.Mode(), st.Size(), st.ModTime().Format(time.RFC3339Nano)))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// ReadTrim returns the text of the file at path without the white space
// around it.
func ReadTrim(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}
