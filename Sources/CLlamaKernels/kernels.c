#include "llama_kernels.h"
