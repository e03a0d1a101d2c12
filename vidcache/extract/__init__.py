"""vidcache.extract"""
