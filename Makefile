# The README's test command is `make test`; .ci/run calls the same target.

GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
VERSITYGW := github.com/versity/versitygw/cmd/versitygw@v1.8.0

.PHONY: test tools bench load

test: tools
	PATH="$(GOBIN):$$PATH" $(GO) test ./...

# tools installs the programs the tests start: versitygw, a real S3 server. The step is skipped
# when the program is present.
tools:
	@command -v versitygw >/dev/null 2>&1 || test -x "$(GOBIN)/versitygw" || $(GO) install $(VERSITYGW)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

load:
	./test/load/run.sh
