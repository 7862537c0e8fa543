"""ratelimit"""
