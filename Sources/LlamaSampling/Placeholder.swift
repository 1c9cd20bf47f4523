// LlamaSampling
