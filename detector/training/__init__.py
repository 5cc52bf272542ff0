"""Training the detector (torch, scikit-learn) and exporting it as a bundle that detector.runtime scores."""
