# The two set-up commands (see README.md). Both install missing system tools first.
.PHONY: dev test deps-dev deps-test

dev: deps-dev
	scripts/build-web.sh
	cargo run --release -- dev

# Builds the binary the integration tests start, then runs every test of the workspace.
test: deps-test
	scripts/test.sh

deps-dev:
	@scripts/install-deps.sh dev

deps-test:
	@scripts/install-deps.sh test
