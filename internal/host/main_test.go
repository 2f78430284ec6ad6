package host_test

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		runFakeWorker(mode)
		return
	}
	os.Exit(m.Run())
}
