#ifndef LLAMA_FUZZ_DRIVER_H
#define LLAMA_FUZZ_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (the body of its own main). SwiftPM links every executable on Linux
/// with main aliased to `<module>_main`, so each harness defines that function and calls this.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
