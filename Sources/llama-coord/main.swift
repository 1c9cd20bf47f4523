print("llama-coord")
