"""vidcache.codec"""
