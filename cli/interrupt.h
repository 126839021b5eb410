// Ctrl-C handling for the CLI. InstallInterruptHandling() blocks SIGINT, SIGTERM
// and SIGHUP in the calling thread (call it first in main, before any thread
// starts, so every thread inherits the mask) and starts one thread that waits for
// them and runs the current handler there, where it may take locks and cancel
// gRPC calls. Without a handler an interrupt exits the process with 130.
// Thread-safe.
#pragma once

#include <functional>

namespace caddie::cli {

void InstallInterruptHandling();

// Sets the handler for interrupts; it is called with the number of interrupts so
// far (1 = first Ctrl-C, 2 = the user insists). nullptr restores the default.
void OnInterrupt(std::function<void(int count)> handler);

// Interrupts received so far.
int InterruptCount();

}  // namespace caddie::cli
