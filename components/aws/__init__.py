"""AWS backend: VPC, EKS, managed node groups, S3, ECR and EKS Pod Identity."""
