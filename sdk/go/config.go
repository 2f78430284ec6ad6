package polyfn

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"go.yaml.in/yaml/v3"
)

// Environment variables of call mode.
const (
	addressEnv = "BAETYL_SERVICE_INSTANCE_ADDRESS"
	nameEnv    = "BAETYL_SERVICE_INSTANCE_NAME"
)

// callConfig is call mode's configuration: the worker's config file (the
// Baetyl service.yml the host writes) with the environment's overrides.
//
//	name: sayhi-1                  # optional; BAETYL_SERVICE_INSTANCE_NAME wins
//	functions:                     # required: the function names served
//	  - name: sayhi
//	    handler: sayhi.handler     # ignored by the Go SDK
//	    codedir: /path             # ignored by the Go SDK
//	server:                        # optional
//	  address: 127.0.0.1:50051     # BAETYL_SERVICE_INSTANCE_ADDRESS wins
//	  grace: 30                    # seconds for in-flight calls on stop
//
// Unknown keys are ignored.
type callConfig struct {
	name      string
	functions map[string]bool
	address   string
	grace     time.Duration
}

type serviceFile struct {
	Name      string `yaml:"name"`
	Functions []struct {
		Name string `yaml:"name"`
	} `yaml:"functions"`
	Server struct {
		Address string   `yaml:"address"`
		Grace   *float64 `yaml:"grace"`
	} `yaml:"server"`
}

// loadCallConfig reads the config file at path and applies the environment.
func loadCallConfig(path string) (callConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return callConfig{}, fmt.Errorf("%s: cannot read config file: %w", path, err)
	}
	cfg, err := parseCallConfig(data)
	if err != nil {
		return callConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

func parseCallConfig(data []byte) (callConfig, error) {
	var f serviceFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return callConfig{}, fmt.Errorf("invalid config: %w", err)
	}
	if len(f.Functions) == 0 {
		return callConfig{}, errors.New("functions: required, a non-empty list of {name, ...}")
	}
	cfg := callConfig{name: f.Name, functions: map[string]bool{}, address: f.Server.Address, grace: defaultGrace}
	for i, fn := range f.Functions {
		if fn.Name == "" {
			return callConfig{}, fmt.Errorf("functions[%d].name: required, a non-empty string", i)
		}
		if cfg.functions[fn.Name] {
			return callConfig{}, fmt.Errorf("functions[%d].name: duplicate function name %q", i, fn.Name)
		}
		cfg.functions[fn.Name] = true
	}
	if g := f.Server.Grace; g != nil {
		if *g < 0 {
			return callConfig{}, fmt.Errorf("server.grace: must be a non-negative number of seconds, got %v", *g)
		}
		cfg.grace = time.Duration(*g * float64(time.Second))
	}
	if name := os.Getenv(nameEnv); name != "" {
		cfg.name = name
	}
	if addr := os.Getenv(addressEnv); addr != "" {
		cfg.address = addr
	}
	return cfg, nil
}
