package server

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/polyfn/polyfn/internal/config"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
)

// adminAddress is the admin listener's address: --admin-listen, else
// admin.listen, else config.DefaultAdminListen; "" when it is off.
func (s *Server) adminAddress(cfg *config.Config) (addr string, isDefault bool) {
	a := cfg.Admin
	if s.o.AdminListen != "" {
		a.Listen = s.o.AdminListen
	}
	return a.AdminAddress(), a.AdminListenDefault()
}

// startAdmin opens the admin listener, unless it is off. When the default
// address is taken (another polyfn on this machine), it runs without one,
// saying so; an address that was set must be free.
func (s *Server) startAdmin(cfg *config.Config, public *httptrigger.Server) error {
	addr, isDefault := s.adminAddress(cfg)
	s.startedAdmin = addr
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if isDefault && errors.Is(err, syscall.EADDRINUSE) {
			s.log.Warn("admin listener: the default address is taken; running without one (set admin.listen, or off)", "listen", addr)
			return nil
		}
		return fmt.Errorf("admin.listen: %w", err)
	}
	settings := cfg.HTTP
	settings.TLS = cfg.Admin.TLS
	s.adminTrig = httptrigger.NewAdminTrigger(httptrigger.NewServer(settings, s.log), ln, s.log, s.health, public)
	return nil
}

// AdminAddr is the admin listener's address, nil when there is none.
func (s *Server) AdminAddr() net.Addr {
	if s.adminTrig == nil {
		return nil
	}
	return s.adminTrig.Addr()
}

// adminFailed delivers the error that ended the admin listener, if one
// did; without an admin listener, never.
func (s *Server) adminFailed() <-chan error {
	if s.adminTrig == nil {
		return nil
	}
	return s.adminTrig.Failed()
}
