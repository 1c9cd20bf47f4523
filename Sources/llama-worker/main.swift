print("llama-worker")
