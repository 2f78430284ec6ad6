// Package e2e holds end-to-end tests: the real host, the real HTTP trigger
// and real language runtimes (polyfn's own and a foreign Baetyl-convention
// one). They need python3 on PATH with polyfn's Python runtime installed;
// `make test` puts .venv/bin first on PATH.
package e2e
