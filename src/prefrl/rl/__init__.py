"""prefrl.rl"""
