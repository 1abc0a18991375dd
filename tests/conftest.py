import torch

# The tests run small tensors, where one thread is fastest; with a busy second core, two
# OpenMP threads were measured 15x slower than one on the tiny UNets.
torch.set_num_threads(1)
