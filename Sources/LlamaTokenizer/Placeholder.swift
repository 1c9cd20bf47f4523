// LlamaTokenizer
