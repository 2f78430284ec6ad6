package config

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// A config file that does not exist is an error that says how to get one,
// and is still recognisable as a missing file.
func TestLoadMissingFileSaysHow(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "polyfn.yaml"))
	if err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error does not wrap fs.ErrNotExist: %v", err)
	}
	if !strings.Contains(err.Error(), "polyfn init writes one") {
		t.Errorf("error does not say how to write a config: %v", err)
	}
}
