// Package testlog holds what tests share to watch logs: a sink that many
// goroutines (a host, its workers' output pumps) may write at once.
package testlog

import (
	"strings"
	"sync"
)

// Buffer is a log sink safe for concurrent writes. The zero value is ready.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
