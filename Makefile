# vpclab — see README.md.
GO ?= go
GOBIN ?= $(shell $(GO) env GOPATH)/bin
PKGS := ./...

.PHONY: all deps build kubernetes vagrant-box vagrant-stage vagrant-e2e test test-cli check-scripts scenarios e2e chaos bench fuzz lint fmt vet catalog proto clean

all: build

## deps: install what builds and tests need on a bare Debian machine (root).
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; \
		[ -x /usr/bin/aws ] || missing="$$missing awscli"; \
		command -v ip >/dev/null || missing="$$missing iproute2"; \
		command -v iptables >/dev/null || missing="$$missing iptables"; \
		command -v tcpdump >/dev/null || missing="$$missing tcpdump"; \
		command -v nft >/dev/null || missing="$$missing nftables"; \
		command -v curl >/dev/null || missing="$$missing curl"; \
		command -v ping >/dev/null || missing="$$missing iputils-ping"; \
		command -v sysctl >/dev/null || missing="$$missing procps"; \
		command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
		command -v vagrant >/dev/null || missing="$$missing vagrant"; \
		command -v runc >/dev/null || missing="$$missing runc"; \
		command -v busybox >/dev/null || missing="$$missing busybox-static"; \
		command -v chromium >/dev/null || missing="$$missing chromium"; \
		if [ -n "$$missing" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		fi; \
	else echo "deps: not root or no apt-get; install awscli (AWS CLI v2), iproute2, iptables, nftables, tcpdump, iputils-ping, procps, runc, busybox-static, chromium yourself"; fi
	$(GO) mod download

# The CNI project's reference plugins, built from the module version go.mod
# pins (its `tool` lines): the lab chains portmap/bandwidth/tuning/loopback,
# the plugin benchmark compares with ptp + host-local.
CNI_PLUGINS := $(addprefix github.com/containernetworking/plugins/plugins/,meta/portmap meta/bandwidth meta/tuning main/loopback main/ptp ipam/host-local)

## build: build every binary into bin/ (reference CNI plugins into bin/cni/).
build:
	@mkdir -p bin/cni
	$(GO) build -o bin/ ./cmd/...
	$(GO) build -o bin/cni/ $(CNI_PLUGINS)

## kubernetes: what Kubernetes mode runs (Kubernetes, containerd, CoreDNS,
## agnhost, the images), built from their Go modules into vpclab's cache,
## each piece once per pinned version (~15 min the first time on 2 cores).
kubernetes:
	$(GO) run ./tools/kbuild -repo .

## test: the whole test suite (what CI runs).
test: build kubernetes check-scripts
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || (echo "gofmt: files above need formatting"; exit 1)
	$(GO) test -race -count=1 -timeout 45m $(PKGS)

## bench: performance figures (BENCH lines) with their comparisons.
bench: kubernetes
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x ./fakeec2/ ./fabric/ ./ipamd/ ./plugin/ ./e2e/ | tee /dev/stderr | grep -E '^BENCH' || true

## fuzz: two minutes per fuzz target (not run in CI).
fuzz:
	$(GO) test ./fakeec2/ec2query/ -run '^$$' -fuzz '^FuzzQueryDecoder$$' -fuzztime 2m
	$(GO) test ./fakeec2/ec2query/ -run '^$$' -fuzz '^FuzzFilters$$' -fuzztime 2m

## scenarios: the scenario suites (all labels but slow); LABEL=… picks some.
scenarios: build
	$(GO) test -count=1 -timeout 30m ./scenarios/ -ginkgo.label-filter='$(if $(LABEL),$(LABEL),!slow)' -ginkgo.v

## e2e: the end-to-end suites: connectivity matrix, lab (secondary-ENI egress, host mode, GC) and CLI flows.
e2e: build
	$(GO) test -count=1 -timeout 30m ./e2e/ ./lab/ ./cmd/vpclab/

## chaos: the chaos soak (label slow; not in CI).
chaos: build
	$(GO) test -count=1 -timeout 60m ./scenarios/ -ginkgo.label-filter=slow -ginkgo.v

## vagrant-box: a Debian 12 box for vagrant-libvirt built here from Debian
## packages (.vagrant-box/; ~2 min), and whether KVM boots guests here.
vagrant-box:
	bash scripts/vagrant-box.sh .vagrant-box

## vagrant-stage: what the Vagrant VM runs, built here, staged for its
## rsync folder (.vagrant-stage/: bin/ and Kubernetes mode's build).
vagrant-stage: build kubernetes
	bash scripts/vagrant-stage.sh .vagrant-stage

## vagrant-e2e: vagrant up with libvirt and the local box, the node and
## aws-node Ready, a pod with a VPC address, vagrant destroy; phase times
## (root; not in CI: ~30 min under TCG).
vagrant-e2e:
	bash scripts/vagrant-e2e.sh

## check-scripts: shellcheck the shell scripts and validate the Vagrantfile.
check-scripts:
	shellcheck scripts/*.sh .ci/run deploy/vpclab-kubeconfig
	vagrant validate

lint: vet
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w .

## catalog: regenerate fakeec2/catalog/data/instance_types.json (see tools/gencatalog) and ipamd/limits.tsv.
catalog:
	@test -n "$(CNI)" -a -n "$(RC)" || (echo "usage: make catalog CNI=vpc_ip_resource_limit.go RC=limits.go [DESCRIBE=instance_types.json.gz]"; exit 2)
	$(GO) run ./tools/gencatalog --cni $(CNI) --rc $(RC) $(if $(DESCRIBE),--describe $(DESCRIBE)) > fakeec2/catalog/data/instance_types.json
	$(GO) run ./tools/genlimits > ipamd/limits.tsv

clean:
	rm -rf bin

## proto: regenerate ipamd/rpc from rpc.proto (needs protoc, protoc-gen-go, protoc-gen-go-grpc).
proto:
	cd ipamd/rpc && protoc -I . -I /usr/include --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative rpc.proto
