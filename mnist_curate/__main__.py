from mnist_curate.cli import main

main()
