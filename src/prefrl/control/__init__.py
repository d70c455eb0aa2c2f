"""prefrl.control"""
