"""prefrl.reward"""
