from pipelines.avatar_pipeline import AvatarPipeline, AvatarPipelineOutput, FaceMesh

__all__ = ["AvatarPipeline", "AvatarPipelineOutput", "FaceMesh"]
