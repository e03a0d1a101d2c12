"""vidcache.scale"""
