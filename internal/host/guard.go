package host

import (
	"os"
	"strconv"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/peer"
)

// WorkerGuard identifies connections that come from the host's workers, so
// that the admin endpoints can refuse them.
func (h *Host) WorkerGuard() peer.Guard {
	h.guardOnce.Do(func() {
		g := peer.Guard{HostPID: os.Getpid(), RunDir: h.runDir, UIDs: map[int]bool{}}
		users := []string{}
		for _, f := range h.cfg.Functions {
			users = append(users, f.User)
		}
		for _, a := range h.cfg.Apps {
			users = append(users, a.User)
		}
		for _, u := range users {
			if u == "" {
				continue
			}
			if usr, err := config.LookupUser(u); err == nil {
				if uid, err := strconv.Atoi(usr.Uid); err == nil && uid != os.Getuid() {
					g.UIDs[uid] = true
				}
			}
		}
		if h.standbyIso.Users != nil {
			lo, hi := h.standbyIso.Users.Range()
			g.UIDLo, g.UIDHi = int(lo), int(hi)
		}
		if c := h.standbyIso.Credential; c != nil && int(c.Uid) != os.Getuid() {
			g.UIDs[int(c.Uid)] = true
		}
		h.guard = g
	})
	return h.guard
}
