// Command polyfn is the polyfn function host. See README.md.
package main

import (
	"os"

	"github.com/polyfn/polyfn/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
