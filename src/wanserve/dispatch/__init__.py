"""wanserve.dispatch"""
