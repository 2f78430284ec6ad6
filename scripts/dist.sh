#!/usr/bin/env bash
# make dist: the release archives dist/polyfn-VERSION-linux-ARCH.tar.gz (amd64, arm64) and
# dist/SHA256SUMS. Each archive holds one directory, polyfn-VERSION-linux-ARCH/, in the layout
# make install makes (internal/runtimes finds the runtimes relative to bin/polyfn):
#
#   bin/polyfn                    static (CGO_ENABLED=0), built for ARCH
#   lib/polyfn/python/            a virtualenv that needs no set-up: bin/python is a link to
#                                 /usr/bin/python3, and lib/pythonX.Y/site-packages holds the
#                                 Python runtime, its dependencies (ARCH's wheels) and pip for
#                                 each CPython X.Y in PY_VERSIONS; the interpreter uses its own
#   lib/polyfn/node/              the Node.js runtime and its packages (pure JavaScript)
#   lib/polyfn/go/{sdk,api}       the Go SDK's source and the protocol module it requires
#   README.md LICENSE CHANGELOG.md docs/ examples/ (the Go example with a go.mod of its own)
#
# Wheels are downloaded once per requirement set into .tools/wheels (PyPI is asked only when
# runtimes/python/pyproject.toml's dependencies change); everything after that is offline.
#
# Environment: VERSION, COMMIT (from the Makefile), GO, PYTHON (runs pip; 3.11+, for tomllib), ARCHES,
# PY_VERSIONS.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
PYTHON=${PYTHON:-python3}
VERSION=${VERSION:?VERSION is not set}
COMMIT=${COMMIT:-$(git rev-parse HEAD)}
ARCHES=${ARCHES:-amd64 arm64}
PY_VERSIONS=${PY_VERSIONS:-3.10 3.11 3.12 3.13 3.14}
OUT=$PWD/dist
STAGE=$OUT/.stage
WHEELS=.tools/wheels

platform() { # the manylinux platform tag of a Go architecture
	case $1 in
	amd64) echo manylinux2014_x86_64 ;;
	arm64) echo manylinux2014_aarch64 ;;
	*) echo "dist: no Python wheels known for $1" >&2; return 1 ;;
	esac
}

rm -rf "$OUT"
mkdir -p "$STAGE" "$WHEELS"

# The Python runtime's requirements, from its pyproject.toml, and pip (functions' requirements
# are installed with the runtime's interpreter: docs/functions.md).
mapfile -t REQS < <("$PYTHON" -c '
import tomllib
with open("runtimes/python/pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
print("pip")')
REQKEY=$(printf '%s\n' "${REQS[@]}" | sha256sum | cut -c1-12)

echo "== wheels (${PY_VERSIONS// /, } for ${ARCHES// /, })"
pids=()
for arch in $ARCHES; do
	plat=$(platform "$arch")
	for v in $PY_VERSIONS; do
		dir=$WHEELS/$REQKEY/$arch-cp${v/./}
		[ -f "$dir/.complete" ] && continue
		(
			rm -rf "$dir"
			"$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: \
				--platform "$plat" --implementation cp --python-version "$v" -d "$dir" "${REQS[@]}"
			touch "$dir/.complete"
		) &
		pids+=($!)
	done
done
for p in "${pids[@]}"; do wait "$p"; done

echo "== Node.js runtime (production packages)"
node_stage=$STAGE/node
mkdir -p "$node_stage"
cp -R runtimes/node/bin runtimes/node/lib runtimes/node/protos runtimes/node/package.json \
	runtimes/node/package-lock.json "$node_stage/"
(cd "$node_stage" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
if native=$(find "$node_stage/node_modules" -name '*.node' -print -quit) && [ -n "$native" ]; then
	echo "dist: the Node.js runtime's packages hold native code ($native): they cannot be shipped for every architecture" >&2
	exit 1
fi

for arch in $ARCHES; do
	name=polyfn-$VERSION-linux-$arch
	root=$STAGE/$name
	lib=$root/lib/polyfn
	echo "== $name"
	mkdir -p "$root/bin" "$lib"

	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath \
		-ldflags "-s -w -X github.com/polyfn/polyfn/internal/buildinfo.Version=$VERSION -X github.com/polyfn/polyfn/internal/buildinfo.Commit=$COMMIT" \
		-o "$root/bin/polyfn" ./cmd/polyfn

	# The Python runtime: a virtualenv by hand, not by `python -m venv` (which ties it to
	# this machine's interpreter and architecture). pyvenv.cfg makes /usr/bin/python3 run
	# with this directory as its prefix, wherever it is unpacked.
	py=$lib/python
	mkdir -p "$py/bin"
	printf 'home = /usr/bin\ninclude-system-site-packages = false\n' >"$py/pyvenv.cfg"
	ln -s /usr/bin/python3 "$py/bin/python"
	ln -s python "$py/bin/python3"
	plat=$(platform "$arch")
	for v in $PY_VERSIONS; do
		site=$py/lib/python$v/site-packages
		"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-index --no-compile \
			--find-links "$WHEELS/$REQKEY/$arch-cp${v/./}" --only-binary=:all: --platform "$plat" \
			--implementation cp --python-version "$v" --target "$site" "${REQS[@]}"
		rm -rf "$site/bin"
		# polyfn_runtime is pure Python: its tracked files, as they are in the tree.
		(cd runtimes/python && git ls-files -z polyfn_runtime | xargs -0 cp --parents -t "$site")
	done

	cp -R "$node_stage" "$lib/node"

	mkdir -p "$lib/go/sdk" "$lib/go/api/azure" "$lib/go/api/baetyl"
	cp sdk/go/go.mod sdk/go/go.sum sdk/go/README.md "$lib/go/sdk/"
	for f in sdk/go/*.go; do case $f in *_test.go) ;; *) cp "$f" "$lib/go/sdk/" ;; esac; done
	"$GO" mod edit -replace=github.com/polyfn/polyfn/api=../api "$lib/go/sdk/go.mod"
	cp api/go.mod api/go.sum "$lib/go/api/"
	cp api/azure/*.go api/azure/*.proto "$lib/go/api/azure/"
	cp api/baetyl/*.go api/baetyl/*.proto "$lib/go/api/baetyl/"

	cp README.md LICENSE CHANGELOG.md "$root/"
	git ls-files -z docs examples | xargs -0 cp --parents -t "$root"
	# The Go example is a module of its own; in the repository its go.mod points at the
	# checkout's SDK, unpacked at none, as `polyfn new` writes one without an SDK (polyfn
	# supplies the SDK when it builds it).
	printf 'module hello-go\n\ngo 1.24\n\nrequire github.com/polyfn/polyfn/sdk/go v0.0.0\n' \
		>"$root/examples/functions/hello-go/go.mod"

	chmod -R a+rX,go-w "$root"
	# Owner, order and times fixed (the commit's time), so that the same tree gives the same
	# archive.
	tar -C "$STAGE" --sort=name --owner=0 --group=0 --numeric-owner \
		--mtime="@$(git log -1 --format=%ct)" -cf - "$name" | gzip -n -6 >"$OUT/$name.tar.gz"
done

(cd "$OUT" && sha256sum polyfn-*.tar.gz >SHA256SUMS)
rm -rf "$STAGE"
ls -l "$OUT"
cat "$OUT/SHA256SUMS"
