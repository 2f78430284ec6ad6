// Package bench holds polyfn's benchmarks. They print numbers; they never
// pass or fail on speed. Run them with `make bench`.
package bench
