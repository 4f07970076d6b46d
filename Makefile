# The README's test command is `make test`; .ci/run calls the same target.

GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
VERSITYGW := github.com/versity/versitygw/cmd/versitygw@v1.8.0

.PHONY: test tools bench load

test: tools
	PATH="$(GOBIN):$$PATH" $(GO) test -count=1 ./...

# tools installs the programs the tests start: versitygw, a real S3 server, and Debian's
# chromium, which the status page's browser test drives. Each step is skipped when the program
# is present. chromium comes from apt-get and so only when run as root (as CI is); elsewhere
# the browser test skips itself until chromium is installed.
tools:
	@command -v versitygw >/dev/null 2>&1 || test -x "$(GOBIN)/versitygw" || $(GO) install $(VERSITYGW)
	@test -x /usr/bin/chromium || test "$$(id -u)" != 0 || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

load:
	./test/load/run.sh
