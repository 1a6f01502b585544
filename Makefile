# Thin wrapper over `cargo xtask`; all logic lives in xtask/.
# Pass extra flags with ARGS, e.g. `make test ARGS="--smp 2 --smp 4"`.

CARGO ?= cargo
ARGS ?=
QEMU := qemu-system-x86_64
QEMU_PKG_INSTALL := apt-get update && apt-get install -y --no-install-recommends qemu-system-x86

.PHONY: build run test boot-log debug bench clean ensure-qemu

build:
	$(CARGO) xtask build $(ARGS)

run test boot-log debug bench: ensure-qemu
	$(CARGO) xtask $@ $(ARGS)

clean:
	$(CARGO) xtask clean $(ARGS)

# A fresh machine has no QEMU: install it from Debian (sudo if not root).
ensure-qemu:
	@if ! command -v $(QEMU) >/dev/null 2>&1; then \
		echo "$(QEMU) not found; installing qemu-system-x86"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
		else echo "error: not root and no sudo; install QEMU with: $(QEMU_PKG_INSTALL)" >&2; exit 1; fi; \
		if ! { $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86; }; then \
			echo "error: could not install QEMU; run: $(QEMU_PKG_INSTALL)" >&2; exit 1; \
		fi; \
		command -v $(QEMU) >/dev/null 2>&1 || { echo "error: $(QEMU) still missing after install" >&2; exit 1; }; \
	fi
