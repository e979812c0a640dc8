"""wanserve.media"""
