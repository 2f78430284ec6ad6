//go:build !linux

package worker

import "errors"

// Users hands out user ids for workers; only Linux has them.
type Users struct{ lo, hi uint32 }

// SharedUsers returns the lease book for the ids lo..hi.
func SharedUsers(lo, hi uint32) *Users { return &Users{lo: lo, hi: hi} }

// Range returns the ids the book hands out.
func (u *Users) Range() (lo, hi uint32) { return u.lo, u.hi }

// ErrNoFreeUser is returned by Take when no id can be leased.
var ErrNoFreeUser = errors.New("no free user id for a worker")

// Take fails: workers of their own user need Linux.
func (u *Users) Take() (uint32, error) { return 0, ErrNoFreeUser }

// Release does nothing.
func (u *Users) Release(uint32) {}

// KillUser does nothing.
func KillUser(uint32) error { return nil }
