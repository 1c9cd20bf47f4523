// LlamaKernels
