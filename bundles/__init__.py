"""Bundles: the on-disk model formats (read, check, write) and their numpy inference, with the tokenizer
and featurizers they need. training/ writes bundles, service/ reads them; nothing here imports torch,
training/ or service/.
"""
