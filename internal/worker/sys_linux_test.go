package worker

import (
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestParseCapEff(t *testing.T) {
	caps, err := parseCapEff("Name:\tpolyfn\nCapInh:\t0000000000000000\nCapEff:\t00000000000000c1\n")
	if err != nil || caps != 0xc1 {
		t.Fatalf("got %x, %v; want c1", caps, err)
	}
	if _, err := parseCapEff("Name:\tpolyfn\n"); err == nil {
		t.Fatal("no CapEff line: want an error")
	}
}

func TestCanRunAs(t *testing.T) {
	self := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), NoSetGroups: true}
	if err := CanRunAs(self); err != nil {
		t.Fatalf("running as the host's own user needs nothing: %v", err)
	}
	eff, err := effectiveCaps()
	if err != nil {
		t.Fatal(err)
	}
	other := &syscall.Credential{Uid: 65534, Gid: 65534}
	err = CanRunAs(other)
	need := uint64(1<<capSetuid | 1<<capSetgid | 1<<capChown)
	switch {
	case eff&need == need && err != nil:
		t.Fatalf("the host has the capabilities, yet: %v", err)
	case eff&need != need && (err == nil || !strings.Contains(err.Error(), "CAP_SET")):
		t.Fatalf("the host lacks capabilities, yet got %v", err)
	}
}
