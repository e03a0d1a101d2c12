"""vidcache.cache"""
