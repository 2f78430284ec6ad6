package build

import (
	"os"
	"path/filepath"
	"syscall"

	"github.com/polyfn/polyfn/internal/builduser"
)

// writeNew writes data to a new file at path (0644): it fails if anything,
// a symbolic link included, is there already, and never follows a link at
// path. The host writes what a build starts from this way into the
// session's out directory, which is root's until the build user is given
// it (builduser.Session.Own).
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// scratchDir is a directory for a session's helper commands to run in that
// holds nothing of a function's: the session's work directory, or the
// temporary directory when not sandboxed.
func scratchDir(s *builduser.Session) string {
	if w := s.Work(); w != "" {
		return filepath.Join(w, "tmp")
	}
	return os.TempDir()
}
