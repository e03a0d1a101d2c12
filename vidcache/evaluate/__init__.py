"""vidcache.evaluate"""
