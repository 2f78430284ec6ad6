package host_test

import (
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv(childHostEnv) != "" {
		runChildHost()
		return
	}
	if mode := os.Getenv(fakeEnv); mode != "" {
		if mode == "attacker" {
			runAttacker()
		} else if strings.HasPrefix(mode, "azure-stream") {
			runFakeStreamingAzureWorker(mode)
		} else if strings.HasPrefix(mode, "azapp-") {
			runFakeAzureApp(mode)
		} else if strings.HasPrefix(mode, "azure") {
			runFakeAzureWorker(mode)
		} else if strings.HasPrefix(mode, "stream") {
			runFakeStreamWorker(mode)
		} else {
			runFakeWorker(mode)
		}
		return
	}
	os.Exit(m.Run())
}
