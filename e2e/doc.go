// Package e2e holds end-to-end tests: the real host, the real HTTP trigger
// and real language runtimes (polyfn's own and a foreign Baetyl-convention
// one). They need python3 on PATH with polyfn's Python runtime installed;
// `make test` puts .venv/bin first on PATH. The MQTT tests against an
// external broker start their own mosquitto (/usr/sbin/mosquitto, Debian
// package mosquitto).
package e2e
