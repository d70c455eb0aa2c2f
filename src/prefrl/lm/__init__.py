"""prefrl.lm"""
