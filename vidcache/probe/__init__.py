"""vidcache.probe"""
