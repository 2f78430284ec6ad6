//go:build !linux

package limits

import (
	"errors"
	"log/slog"

	"github.com/polyfn/polyfn/internal/config"
)

// detect: resource limits need Linux.
func detect(log *slog.Logger) *Limiter {
	log.Warn("resource limits: not supported on this system; limits are not enforced")
	return &Limiter{b: noBackend{}, kind: "none"}
}

type noBackend struct{}

func (noBackend) close() bool { return true }

func (noBackend) newGroup(string, config.Limits) (Group, error) {
	return nil, errors.New("resource limits need Linux")
}

// ProcessDirs returns nothing: cgroups are Linux's.
func ProcessDirs(int) (map[string]string, error) { return nil, errors.New("cgroups need Linux") }
