import os

# Tests never touch the network: the Hub is reached only through a local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GLOG_minloglevel", "2")
