# Thin wrapper over `cargo xtask`; all logic lives in xtask/.
# Pass extra flags with ARGS, e.g. `make test ARGS="--smp 2 --smp 4"`;
# `make help` lists the targets.

CARGO ?= cargo
ARGS ?=
QEMU := qemu-system-x86_64
QEMU_PKG_INSTALL := apt-get update && apt-get install -y --no-install-recommends qemu-system-x86

.PHONY: build run test boot-log debug bench screenshot clean help ensure-qemu

build:
	$(CARGO) xtask build $(ARGS)

run test boot-log debug bench screenshot: ensure-qemu
	$(CARGO) xtask $@ $(ARGS)

clean:
	$(CARGO) xtask clean $(ARGS)

help:
	@echo 'make <target> [ARGS="runner flags"]   (all of them: cargo xtask <target> --help)'
	@echo ''
	@echo '  build     build the kernel (release) to target/release/vireo (the default target)'
	@echo '  run       boot it in QEMU with the serial shell on this terminal; Ctrl-A X quits'
	@echo '  test      host tests, then the in-kernel tests with 2 and 4 vCPUs; ends with a total'
	@echo '  boot-log  boot once until the kernel is ready; serial log in target/boot.log'
	@echo '  debug     start QEMU halted with a gdb stub on :1234 and print how to attach'
	@echo '  bench     host ring benchmark, then the kernel benchmarks (ARGS=--peer: vs Linux)'
	@echo '  screenshot boot the shell and write target/screenshot.png of its screen'
	@echo '  clean     cargo clean'
	@echo '  help      this list'
	@echo ''
	@echo 'Examples:'
	@echo '  make run ARGS="--smp 4"                     4 vCPUs (1 to 64)'
	@echo '  make run ARGS=--vnc                         screen on VNC 127.0.0.1:5900 (a window if DISPLAY is set)'
	@echo "  make run ARGS='--append \"log=debug\"'        extra kernel command line"
	@echo '  make run ARGS="-v -- -d int"                print the QEMU command; pass QEMU arguments'
	@echo '  make test ARGS="--filter sched:: --smp 2"   only matching in-kernel tests, 2 vCPUs'
	@echo "  make boot-log ARGS='--until \"vireo> \"'    stop at other text than the ready line"
	@echo '  make debug ARGS="--gdb-port 4321"           another gdb port'
	@echo ''
	@echo 'Exit status: 0 ok or quit, 1 kernel failed, 2 bad flags, 3 QEMU failed.'

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
