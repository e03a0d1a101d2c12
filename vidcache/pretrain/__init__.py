"""vidcache.pretrain"""
